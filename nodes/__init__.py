"""Built-in nodes. Each entry maps the YAML `type:` name to `module:Class`, imported on first use
so that a graph only loads the libraries (torch, projectaria-tools, ...) its nodes need."""

BUILTIN = {
    "aria_vrs": "nodes.aria_vrs:AriaVrsSource",
    "aria_live": "nodes.aria_live:AriaLiveSource",
    "synthetic_aria": "nodes.synthetic:SyntheticAriaSource",
    "aria_rgb": "nodes.aria_rgb:AriaRgb",
    "record": "nodes.recording:Record",
    "replay": "nodes.recording:Replay",
    "jsonl": "nodes.jsonl:JsonlSink",
    "stats": "nodes.stats:StatsSink",
    "rerun_view": "nodes.rerun_view:RerunView",
    "zmq_pub": "nodes.zmq_bridge:ZmqPub",
    "zmq_sub": "nodes.zmq_bridge:ZmqSub",
    "encode": "nodes.codec:Encode",
    "decode": "nodes.codec:Decode",
    "clip_zero_shot": "nodes.clip:ClipZeroShot",
    "classify": "nodes.classify:Classify",
    "label_retention": "nodes.retention:LabelRetention",
    "notch": "nodes.audio_dsp:Notch",
    "compand": "nodes.audio_dsp:Compand",
    "expand": "nodes.audio_dsp:Expand",
    "audio_baseline_encode": "nodes.audio_baselines:AudioBaselineEncode",
    "audio_baseline_decode": "nodes.audio_baselines:AudioBaselineDecode",
    "spatial_metrics": "nodes.spatial_metrics:SpatialMetrics",
    "image_baseline_encode": "nodes.image_baselines:ImageBaselineEncode",
    "image_baseline_decode": "nodes.image_baselines:ImageBaselineDecode",
}

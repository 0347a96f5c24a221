"""Cloud-side perception models (CLIP zero-shot classification) used by nodes and `dance eval`."""

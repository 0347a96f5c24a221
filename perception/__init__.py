"""Cloud-side perception models used by nodes and `dance eval`: CLIP zero-shot classification
(perception/clip.py) and torchvision ImageNet classifiers (perception/classifier.py)."""

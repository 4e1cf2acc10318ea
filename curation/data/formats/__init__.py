"""Dataset formats in and out: Hugging Face, COCO, FiftyOne, torchvision trees; shared helpers in ``common``."""

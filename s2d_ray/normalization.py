"""Per-channel ImageNet statistics (SPEC §1), shared by the data layer and the previews."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

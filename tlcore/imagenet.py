"""ImageNet's per-channel mean and standard deviation of RGB in [0, 1]: the input normalisation that most
ImageNet-pretrained weights (torchvision's, most of timm's) expect."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

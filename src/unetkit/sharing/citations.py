"""The papers a shared model cites: the U-Net's, and the paper of the encoder an encoder U-Net is built on.

Encoders are named as smp and timm name them (`resnet34`, `vgg16`, `efficientnet-b0`, `tu-inception_v3`); the
family is the name's stem, matched longest first so `inceptionresnetv2` is not taken for an Inception net. A
family missing here cites the U-Net alone rather than a wrong paper.
"""

from __future__ import annotations

from unetkit.config import ModelConfig

UNET = ("Ronneberger, O., Fischer, P., Brox, T.: U-Net: Convolutional Networks for Biomedical Image "
        "Segmentation. MICCAI 2015, LNCS 9351, pp. 234-241", "10.1007/978-3-319-24574-4_28")

# name stem -> (reference, DOI)
ENCODERS: dict[str, tuple[str, str]] = {
    "resnext": ("Xie, S., Girshick, R., Dollar, P., Tu, Z., He, K.: Aggregated Residual Transformations for Deep "
                "Neural Networks. CVPR 2017", "10.1109/CVPR.2017.634"),
    "resnet": ("He, K., Zhang, X., Ren, S., Sun, J.: Deep Residual Learning for Image Recognition. CVPR 2016",
               "10.1109/CVPR.2016.90"),
    "vgg": ("Simonyan, K., Zisserman, A.: Very Deep Convolutional Networks for Large-Scale Image Recognition. "
            "ICLR 2015", "10.48550/arXiv.1409.1556"),
    "inceptionresnetv2": ("Szegedy, C., Ioffe, S., Vanhoucke, V., Alemi, A.: Inception-v4, Inception-ResNet and "
                          "the Impact of Residual Connections on Learning. AAAI 2017", "10.1609/aaai.v31i1.11231"),
    "inception_v3": ("Szegedy, C., Vanhoucke, V., Ioffe, S., Shlens, J., Wojna, Z.: Rethinking the Inception "
                     "Architecture for Computer Vision. CVPR 2016", "10.1109/CVPR.2016.308"),
    "efficientnet": ("Tan, M., Le, Q.: EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks. "
                     "ICML 2019", "10.48550/arXiv.1905.11946"),
    "mobilenet_v2": ("Sandler, M., Howard, A., Zhu, M., Zhmoginov, A., Chen, L.-C.: MobileNetV2: Inverted "
                     "Residuals and Linear Bottlenecks. CVPR 2018", "10.1109/CVPR.2018.00474"),
    "densenet": ("Huang, G., Liu, Z., van der Maaten, L., Weinberger, K.: Densely Connected Convolutional "
                 "Networks. CVPR 2017", "10.1109/CVPR.2017.243"),
}


def encoder_paper(encoder: str) -> tuple[str, str] | None:
    """(reference, DOI) of an encoder's family, e.g. `resnet18` -> the ResNet paper; None when not known."""
    name = encoder.removeprefix("tu-").lower()
    for stem in sorted(ENCODERS, key=len, reverse=True):
        if name.startswith(stem):
            return ENCODERS[stem]
    return None


def cite_model(cfg: ModelConfig) -> list[tuple[str, str]]:
    """(reference, DOI) pairs: the U-Net paper first, then the encoder's for `model.name: encoder_unet`."""
    papers = [UNET]
    if cfg.name == "encoder_unet" and (paper := encoder_paper(cfg.encoder)) is not None:
        papers.append(paper)
    return papers

"""layerfuse: fuse local (early-layer) and global ResNet-50 features, align with TCA, classify."""
__version__ = "0.1.0"

__all__ = ["__version__"]

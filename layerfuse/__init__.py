"""layerfuse: fuse local (early-layer) and global ResNet-50 features, align with TCA, classify."""
__version__ = "0.1.0"

import hdf5plugin  # noqa: E402,F401  registers the Blosc (lz4/zstd) HDF5 filter the feature stores use

__all__ = ["__version__"]

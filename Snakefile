# layerfuse: local + global ResNet-50 features, TCA, linear SVM.  See README.md.
import os

from snakemake.utils import min_version

min_version("9.0")


# A --configfile given on the command line is the whole config (plus schema
# defaults); the embedded demo config.yaml is used only when none is given.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# The report's landing page: report/workflow.rst with a table of every experiment's pick (rule report_landing)
# once a run has written it, else report/workflow.rst alone.
LANDING_PAGE = "results/report/workflow.rst"


report: os.path.abspath(LANDING_PAGE) if os.path.exists(LANDING_PAGE) else "report/workflow.rst"


include: "rules/common.smk"


# Run in the submitting process, never as cluster jobs: the weights download needs
# the internet, the others take a second and read only small files.
localrules:
    fetch_weights_npm,
    dump_config,
    aggregate_scores,
    select_configuration,
    report_group,
    report_landing,


include: "rules/data.smk"
include: "rules/weights.smk"
include: "rules/extract.smk"
include: "rules/reduce.smk"
include: "rules/fuse.smk"
include: "rules/adapt.smk"
include: "rules/classify.smk"
include: "rules/model.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),

# layerfuse: local + global ResNet-50 features, TCA, linear SVM.  See README.md.
import os

from snakemake.utils import min_version

min_version("9.0")


# A --configfile given on the command line is the whole config (plus schema
# defaults); the embedded demo config.yaml is used only when none is given.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"


# The report's landing page: this run's (rule report_landing: report/workflow.rst with each experiment's pick)
# once written, else report/workflow.rst alone.
report: os.path.abspath(LANDING_PAGE) if os.path.exists(LANDING_PAGE) else "report/workflow.rst"


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

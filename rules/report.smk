rule aggregate_scores:
    input:
        scores=score_files,
        selections=selection_files,
        source_manifest="results/{experiment}/manifest/source.tsv",
        target_manifest="results/{experiment}/manifest/target.tsv",
        pca=pca_fits,
    output:
        csv="results/{experiment}/accuracy.csv",
        tables="results/{experiment}/tables.md",
    params:
        center=config["svm"]["center"],
        global_layer=config["global_layer"],
        capped=CAPPED,
    log:
        "logs/{experiment}/aggregate_scores.log",
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/aggregate_scores.py"


rule report_group:
    input:
        group_accuracy_files,
    output:
        markdown="results/report/{group}.md",
        tables=report(
            "results/report/{group}.html",
            caption="../report/group_tables.rst",
            category="Tables",
            labels={"group": "{group}", "what": "accuracy tables"},
        ),
        fusion=report(
            "results/report/{group}_fusion_vs_global.png",
            caption="../report/fusion_vs_global.rst",
            category="Figures",
            labels={"group": "{group}", "figure": "fusion - global"},
        ),
        dims=report(
            "results/report/{group}_accuracy_vs_dims.png",
            caption="../report/accuracy_vs_dims.rst",
            category="Figures",
            labels={"group": "{group}", "figure": "accuracy vs TCA dims"},
        ),
    params:
        report=group_params,
    log:
        "logs/report/{group}.log",
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/report_group.py"


rule dump_config:
    output:
        report(CONFIG_DUMP, category="Configuration", caption="../report/config.rst"),
    params:
        config=canonical(config),
    log:
        "logs/report/dump_config.log",
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/dump_config.py"


# The report's landing page (the Snakefile's `report:` once it exists): report/workflow.rst with a figure and a
# table of each experiment's pick beside the source-only classifier and the paper's number.
rule report_landing:
    input:
        intro=str(Path(workflow.basedir) / "report" / "workflow.rst"),
        selections=expand("results/{experiment}/selection/{backbone}.csv", experiment=EXPERIMENTS, backbone=BACKBONES),
        predictions=expand("results/{experiment}/predictions/{backbone}.csv", experiment=EXPERIMENTS,
                           backbone=BACKBONES),
        target_manifests=expand("results/{experiment}/manifest/target.tsv", experiment=EXPERIMENTS),
    output:
        LANDING_PAGE,
    params:
        report=canonical({"paper_tables": {e: config["experiments"][e].get("paper_table") for e in EXPERIMENTS},
                          "finetuned": FINETUNED}),
    log:
        "logs/report/report_landing.log",
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/report_landing.py"

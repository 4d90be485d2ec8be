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
        report("results/report/config.yaml", category="Configuration", caption="../report/config.rst"),
    params:
        config=canonical(config),
    log:
        "logs/report/dump_config.log",
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/dump_config.py"

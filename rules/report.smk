rule aggregate_scores:
    input:
        scores=score_files,
        selections=selection_files,
        source_manifest="results/{experiment}/manifest/source.tsv",
        target_manifest="results/{experiment}/manifest/target.tsv",
    output:
        csv="results/{experiment}/accuracy.csv",
        tables="results/{experiment}/tables.md",
    params:
        center=config["svm"]["center"],
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
        markdown=report(
            "results/report/{group}.md",
            category="Tables",
            labels={"group": "{group}", "what": "tables vs paper"},
        ),
        fusion=report(
            "results/report/{group}_fusion_vs_global.png",
            category="Figures",
            labels={"group": "{group}", "figure": "fusion - global"},
        ),
        dims=report(
            "results/report/{group}_accuracy_vs_dims.png",
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
        report("results/report/config.yaml", category="Configuration"),
    params:
        config=canonical(config),
    log:
        "logs/report/dump_config.log",
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/dump_config.py"

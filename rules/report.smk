rule aggregate_scores:
    input:
        score_files,
    output:
        csv="results/{experiment}/accuracy.csv",
        tables="results/{experiment}/tables.md",
    log:
        "logs/{experiment}/aggregate_scores.log",
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/aggregate_scores.py"

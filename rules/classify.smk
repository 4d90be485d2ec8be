rule evaluate_svm:
    input:
        score_input,
    output:
        "results/{experiment}/scores/{backbone}/{featureset}/{adapter}.csv",
    params:
        svm=canonical(config["svm"]),
    log:
        "logs/{experiment}/evaluate_svm/{backbone}/{featureset}/{adapter}.log",
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/evaluate_svm.py"

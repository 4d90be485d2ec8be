# One job per feature set: a linear SVM for the raw features and for each TCA dimension.
rule evaluate_svm:
    input:
        unpack(score_inputs),
    output:
        "results/{experiment}/scores/{backbone}/{featureset}.csv",
    params:
        svm=canonical(config["svm"]),
        adapters=ADAPTERS,
    log:
        "logs/{experiment}/evaluate_svm/{backbone}/{featureset}.log",
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/evaluate_svm.py"

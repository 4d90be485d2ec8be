# One job per feature set: a linear SVM for every adapter (raw features, each TCA dimension) at each
# centring, with the label-free selection criteria of every cell and its target predictions.
rule evaluate_svm:
    input:
        unpack(score_inputs),
    output:
        scores="results/{experiment}/scores/{backbone}/{featureset}.csv",
        predictions="results/{experiment}/scores/{backbone}/{featureset}.h5",
    params:
        svm=SVM_PARAMS,
        selection=score_selection,
        label_shift=label_shift_params,
        adapters=ADAPTERS,
    log:
        "logs/{experiment}/evaluate_svm/{backbone}/{featureset}.log",
    benchmark:
        "benchmarks/{experiment}/evaluate_svm/{backbone}/{featureset}.tsv"
    resources:
        mem_mb=evaluate_svm_mem_mb,
        runtime=30,
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/evaluate_svm.py"


# Per backbone: each criterion's pick, and the default criterion's per-image predictions.
rule select_configuration:
    input:
        unpack(selection_inputs),
    output:
        selection="results/{experiment}/selection/{backbone}.csv",
        predictions="results/{experiment}/predictions/{backbone}.csv",
        confusion="results/{experiment}/predictions/{backbone}_confusion.csv",
        figure=report(
            "results/{experiment}/predictions/{backbone}_confusion.png",
            caption="../report/confusion.rst",
            category="Predictions",
            labels={"experiment": "{experiment}", "backbone": "{backbone}", "figure": "confusion matrix"},
        ),
        summary=report(
            "results/{experiment}/predictions/{backbone}.html",
            caption="../report/predictions_page.rst",
            category="Predictions",
            labels={"experiment": "{experiment}", "backbone": "{backbone}", "figure": "selection and predictions"},
        ),
    params:
        select=selection_params,
    log:
        "logs/{experiment}/select_configuration/{backbone}.log",
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/select_configuration.py"

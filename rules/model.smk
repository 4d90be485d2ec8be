# The selected cell of each backbone as a model: `python -m layerfuse predict --model DIR` applies it to
# new images without Snakemake (layerfuse.model).
rule export_model:
    input:
        unpack(model_inputs),
    output:
        directory("results/{experiment}/model/{backbone}"),
    params:
        model=model_params,
    log:
        "logs/{experiment}/export_model/{backbone}.log",
    benchmark:
        "benchmarks/{experiment}/export_model/{backbone}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/export_model.py"

# One adapter on one feature set: TCA at its largest dimension (`tca`) or an `adapters` entry (skada's CORAL,
# SA, linear OT; layerfuse's JDA); see layerfuse.adapt.
rule fit_adapter:
    input:
        unpack(fused_inputs),
    output:
        "results/{experiment}/adapted/{backbone}/{featureset}/{adapter}.h5",
    params:
        adapter=adapter_params,
    log:
        "logs/{experiment}/fit_adapter/{backbone}/{featureset}/{adapter}.log",
    benchmark:
        "benchmarks/{experiment}/fit_adapter/{backbone}/{featureset}/{adapter}.tsv"
    resources:
        mem_mb=fit_adapter_mem_mb,
        runtime=20,
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/fit_adapter.py"

rule fit_tca:
    input:
        unpack(fused_inputs),
    output:
        "results/{experiment}/adapted/{backbone}/{featureset}/tca.h5",
    params:
        tca=tca_params,
    log:
        "logs/{experiment}/fit_tca/{backbone}/{featureset}.log",
    benchmark:
        "benchmarks/{experiment}/fit_tca/{backbone}/{featureset}.tsv"
    resources:
        mem_mb=fit_tca_mem_mb,
        runtime=20,
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/fit_tca.py"


# One `adapters` entry (skada's CORAL, SA, linear OT; layerfuse's JDA) on one feature set.
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

rule reduce_layer:
    input:
        unpack(reduce_input),
    output:
        "results/{experiment}/reduced/{backbone}/{local_layer}/{reducer}.h5",
    params:
        reducer=reducer_params,
    log:
        "logs/{experiment}/reduce_layer/{backbone}/{local_layer}/{reducer}.log",
    benchmark:
        "benchmarks/{experiment}/reduce_layer/{backbone}/{local_layer}/{reducer}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/reduce_layer.py"


# Per-image reducers (flatten, pool2d) of a pooled dataset, once for every seed.
rule reduce_pool_layer:
    input:
        "results/pools/{pool}/features/{backbone}/source/{local_layer}.h5",
    output:
        "results/pools/{pool}/reduced/{backbone}/{local_layer}/{reducer}.h5",
    params:
        reducer=reducer_params,
    log:
        "logs/pools/{pool}/reduce_layer/{backbone}/{local_layer}/{reducer}.log",
    benchmark:
        "benchmarks/pools/{pool}/reduce_layer/{backbone}/{local_layer}/{reducer}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/reduce_pool_layer.py"

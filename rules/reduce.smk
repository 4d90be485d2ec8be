rule reduce_layer:
    input:
        source="results/{experiment}/features/{backbone}/source/{local_layer}.h5",
        target="results/{experiment}/features/{backbone}/target/{local_layer}.h5",
    output:
        "results/{experiment}/reduced/{backbone}/{local_layer}/{reducer}.h5",
    params:
        reducer=reducer_params,
    log:
        "logs/{experiment}/reduce_layer/{backbone}/{local_layer}/{reducer}.log",
    benchmark:
        "benchmarks/{experiment}/reduce_layer/{backbone}/{local_layer}/{reducer}.tsv"
    resources:
        mem_mb=3000,
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/reduce_layer.py"

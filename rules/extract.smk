rule extract_features:
    input:
        unpack(weights_files),
        images="results/{experiment}/images/{domain}.h5",
    output:
        "results/{experiment}/features/{backbone}/{domain}/{layer}.h5",
    params:
        extract=extract_params,
    threads: workflow.cores
    log:
        "logs/{experiment}/extract_features/{backbone}/{domain}/{layer}.log",
    benchmark:
        "benchmarks/{experiment}/extract_features/{backbone}/{domain}/{layer}.tsv"
    resources:
        mem_mb=3000,
        runtime=60,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/extract_features.py"

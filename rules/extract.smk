rule extract_features:
    input:
        unpack(weights_files),
        images="results/{experiment}/images/{domain}.h5",
    output:
        "results/{experiment}/features/{backbone}/{domain}/{layer}.h5",
    params:
        extract=extract_params,
    # Half the cores, first in line: a job wanting every core waits until all are free at
    # once, which Snakemake's scheduler rarely sees while 1-thread jobs (reductions, TCA,
    # SVMs) keep becoming ready, so extraction on the critical path was starved behind them.
    threads: max(1, workflow.cores // 2)
    priority: 10
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


use rule extract_features as extract_pool_features with:
    input:
        unpack(weights_files),
        images="results/pools/{pool}/images/{domain}.h5",
    output:
        "results/pools/{pool}/features/{backbone}/{domain}/{layer}.h5",
    log:
        "logs/pools/{pool}/extract_features/{backbone}/{domain}/{layer}.log",
    benchmark:
        "benchmarks/pools/{pool}/extract_features/{backbone}/{domain}/{layer}.tsv"

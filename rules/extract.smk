# Extraction: one forward pass per (pretrained backbone, domain) writes every layer's store
# (`extract.one_pass: true`, the default), or one job per layer (`one_pass: false`: adding a
# layer later extracts only that layer). A fine-tuned backbone's own layers (the layers after
# its frozen part: the target's global vector, by default) always have one job per layer.
# With `extract.shard_size`, a domain's pass is one job per shard of that many images, gathered in
# order into the same stores (byte for byte those of one pass).


rule extract_layer:
    input:
        unpack(weights_files),
        images="results/{experiment}/images/{domain}.h5",
    output:
        "results/{experiment}/features/{backbone}/{domain}/{layer}.h5",
    wildcard_constraints:
        backbone=PER_LAYER_BACKBONE,
    params:
        extract=extract_params,
        layer_keys=lambda wildcards: [wildcards.layer],
    # Half the cores, first in line: a job wanting every core waits until all are free at
    # once, which Snakemake's scheduler rarely sees while 1-thread jobs (reductions, TCA,
    # SVMs) keep becoming ready, so extraction on the critical path was starved behind them.
    threads: max(1, workflow.cores // 2)
    priority: 10
    log:
        "logs/{experiment}/extract_layer/{backbone}/{domain}/{layer}.log",
    benchmark:
        "benchmarks/{experiment}/extract_layer/{backbone}/{domain}/{layer}.tsv"
    resources:
        mem_mb=3000,
        runtime=60,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/extract_features.py"


use rule extract_layer as extract_pool_layer with:
    input:
        unpack(weights_files),
        images="results/pools/{pool}/images/{domain}.h5",
    output:
        "results/pools/{pool}/features/{backbone}/{domain}/{layer}.h5",
    log:
        "logs/pools/{pool}/extract_layer/{backbone}/{domain}/{layer}.log",
    benchmark:
        "benchmarks/pools/{pool}/extract_layer/{backbone}/{domain}/{layer}.tsv"


if ONE_PASS_BACKBONES and not SHARD_SIZE:

    rule extract_features:
        input:
            unpack(weights_files),
            images="results/{experiment}/images/{domain}.h5",
            pca=pca_models,
        output:
            [f"results/{{experiment}}/features/{{backbone}}/{{domain}}/{key}.h5" for key in PASS_OUTPUTS],
        wildcard_constraints:
            backbone=ONE_PASS_BACKBONE,
        params:
            extract=pass_params,
            layer_keys=PASS_OUTPUTS,
        # Every core: these jobs are the first after decoding, when little else is ready, and the
        # source's pass is on every later job's path; the priority puts them first in line.
        threads: workflow.cores
        priority: 10
        log:
            "logs/{experiment}/extract_features/{backbone}/{domain}.log",
        benchmark:
            "benchmarks/{experiment}/extract_features/{backbone}/{domain}.tsv"
        resources:
            mem_mb=pass_mem_mb,
            runtime=120,
        conda:
            "../envs/torch.yaml"
        script:
            "../workflow_scripts/extract_features.py"

    use rule extract_features as extract_pool_features with:
        input:
            unpack(weights_files),
            images="results/pools/{pool}/images/{domain}.h5",
        output:
            [f"results/pools/{{pool}}/features/{{backbone}}/{{domain}}/{layer}.h5" for layer in PASS_LAYERS],
        log:
            "logs/pools/{pool}/extract_features/{backbone}/{domain}.log",
        benchmark:
            "benchmarks/pools/{pool}/extract_features/{backbone}/{domain}.tsv"


if ONE_PASS_BACKBONES and SHARD_SIZE:

    rule extract_shard:
        input:
            unpack(weights_files),
            images="results/{experiment}/images/{domain}.h5",
            pca=pca_models,
        output:
            [temp(f"results/{{experiment}}/features/{{backbone}}/{{domain}}/shards/{{shard}}/{key}.h5")
             for key in PASS_OUTPUTS],
        wildcard_constraints:
            backbone=ONE_PASS_BACKBONE,
            shard=r"\d+",
        params:
            extract=pass_params,
            layer_keys=PASS_OUTPUTS,
            shard_size=SHARD_SIZE,
        threads: workflow.cores
        priority: 10
        log:
            "logs/{experiment}/extract_shard/{backbone}/{domain}/{shard}.log",
        benchmark:
            "benchmarks/{experiment}/extract_shard/{backbone}/{domain}/{shard}.tsv"
        resources:
            mem_mb=pass_mem_mb,
            runtime=120,
        conda:
            "../envs/torch.yaml"
        script:
            "../workflow_scripts/extract_shard.py"

    use rule extract_shard as extract_pool_shard with:
        input:
            unpack(weights_files),
            images="results/pools/{pool}/images/{domain}.h5",
        output:
            [temp(f"results/pools/{{pool}}/features/{{backbone}}/{{domain}}/shards/{{shard}}/{layer}.h5")
             for layer in PASS_LAYERS],
        log:
            "logs/pools/{pool}/extract_shard/{backbone}/{domain}/{shard}.log",
        benchmark:
            "benchmarks/pools/{pool}/extract_shard/{backbone}/{domain}/{shard}.tsv"

    rule gather_features:
        input:
            record=weights_record,
            images="results/{experiment}/images/{domain}.h5",
            shards=shard_stores,
        output:
            [f"results/{{experiment}}/features/{{backbone}}/{{domain}}/{key}.h5" for key in PASS_OUTPUTS],
        wildcard_constraints:
            backbone=ONE_PASS_BACKBONE,
        params:
            extract=pass_params,
            layer_keys=PASS_OUTPUTS,
        log:
            "logs/{experiment}/gather_features/{backbone}/{domain}.log",
        benchmark:
            "benchmarks/{experiment}/gather_features/{backbone}/{domain}.tsv"
        resources:
            mem_mb=2000,
            runtime=60,
        conda:
            "../envs/torch.yaml"
        script:
            "../workflow_scripts/gather_features.py"

    use rule gather_features as gather_pool_features with:
        input:
            record=weights_record,
            images="results/pools/{pool}/images/{domain}.h5",
            shards=shard_stores,
        output:
            [f"results/pools/{{pool}}/features/{{backbone}}/{{domain}}/{layer}.h5" for layer in PASS_LAYERS],
        log:
            "logs/pools/{pool}/gather_features/{backbone}/{domain}.log",
        benchmark:
            "benchmarks/pools/{pool}/gather_features/{backbone}/{domain}.tsv"


# Without stored maps (`extract.store_maps: false`), PCA's loadings come first: a pass over a seeded sample
# of the source (`extract.pca_sample` images) keeps the local blocks' maps until `fit_pca` has fitted on them;
# both domains' passes then project every image onto the loadings.
if ONE_PASS_BACKBONES and not STORE_MAPS and PCA_REDUCERS:

    rule extract_pca_sample:
        input:
            unpack(weights_files),
            images="results/{experiment}/images/source.h5",
        output:
            [temp(f"results/{{experiment}}/features/{{backbone}}/source/pca_sample/{layer}.h5")
             for layer in config["local_layers"]],
        wildcard_constraints:
            backbone=ONE_PASS_BACKBONE,
        params:
            extract=pca_sample_params,
            layer_keys=config["local_layers"],
        threads: workflow.cores
        priority: 10
        log:
            "logs/{experiment}/extract_pca_sample/{backbone}.log",
        benchmark:
            "benchmarks/{experiment}/extract_pca_sample/{backbone}.tsv"
        resources:
            mem_mb=3000,
            runtime=60,
        conda:
            "../envs/torch.yaml"
        script:
            "../workflow_scripts/extract_features.py"

    rule fit_pca:
        input:
            sample="results/{experiment}/features/{backbone}/source/pca_sample/{local_layer}.h5",
            images="results/{experiment}/images/source.h5",
        output:
            "results/{experiment}/pca/{backbone}/{local_layer}/{reducer}.h5",
        params:
            reducer=reducer_params,
        # blocks of columns multiplied at once, one per thread: the same model whatever the threads
        threads: fit_pca_threads
        priority: 10
        log:
            "logs/{experiment}/fit_pca/{backbone}/{local_layer}/{reducer}.log",
        benchmark:
            "benchmarks/{experiment}/fit_pca/{backbone}/{local_layer}/{reducer}.tsv"
        resources:
            mem_mb=fit_pca_mem_mb,
            runtime=30,
        conda:
            "../envs/layerfuse.yaml"
        script:
            "../workflow_scripts/fit_pca.py"

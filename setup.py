from setuptools import find_packages, setup

setup(
    name="criticsearch",
    version="0.1.0",
    description="Reinforcement learning for LLM search agents with simulated search and a critic LLM",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["verl", "verl.*", "zerosearch", "zerosearch.*"]),
    package_data={"verl": ["trainer/config/*.yaml"]},
    install_requires=[
        "torch>=2.6",
        "ray[default]>=2.40",
        "transformers>=4.51",
        "tokenizers>=0.21",
        "hydra-core>=1.3",
        "omegaconf>=2.3",
        "datasets>=3.0",
        "pyarrow>=15",
        "pandas>=2.0",
        "numpy>=1.26",
        "tensordict>=0.8",
        "tqdm>=4.60",
    ],
    extras_require={
        "gpu": ["vllm>=0.8", "flash-attn>=2.6"],
        "sglang": ["sglang>=0.4"],
        "search": ["serpapi>=0.1.5"],
        "wandb": ["wandb>=0.17"],
        "tensorboard": ["tensorboard>=2.15"],
        "test": ["pytest>=8.0", "pytest-timeout>=2.3", "tensorboard>=2.15", "wandb>=0.17"],
    },
)

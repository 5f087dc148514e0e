import re
from pathlib import Path

from setuptools import find_packages, setup


def package_index_readme(text: str) -> str:
    """The README for a package index page, where paths relative to the checkout lead nowhere: images become
    their caption in italics, links to the checkout's files become plain text naming the file."""
    text = re.sub(r"!\[([^\]]*)\]\((?!https?://)[^)]*\)", lambda m: f"*({m.group(1)}: in the project's docs)*", text)

    def plain(m: re.Match) -> str:
        label, target = m.group(1), m.group(2)
        return f"`{target}`" if label.strip("`") == target else f"{label} (`{target}` in the source)"

    return re.sub(r"\[([^\]]*)\]\((?!https?://|#)([^)]*)\)", plain, text)


setup(
    name="cyclegan-culture",
    version="0.1.0",
    description="Translate photos into the art of different cultures (and back) with CycleGAN, "
                "and measure how those cultures differ.",
    long_description=package_index_readme(Path(__file__).with_name("README.md").read_text(encoding="utf-8")),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    classifiers=["License :: OSI Approved :: MIT License", "Programming Language :: Python :: 3",
                 "Topic :: Scientific/Engineering :: Image Processing"],
    python_requires=">=3.9",
    packages=find_packages(include=["cyclegan_culture", "cyclegan_culture.*"]),
    # the shipped culture models, the app's page and its example photos travel inside the wheel
    package_data={"cyclegan_culture": ["pretrained/cultures/*/*", "pretrained/examples/*", "app/static/*"]},
    install_requires=[
        "torch>=2.2",
        "torchvision>=0.17",
        "numpy>=1.23",
        "pillow>=9.1",
        "dominate>=2.8",
        "scikit-image>=0.21",
        "tqdm>=4.60",
        "matplotlib>=3.6",  # the analysis report's plots
    ],
    extras_require={
        # live monitoring; visdom 0.2.4 is a source package that needs setuptools<81 to build (see the Makefile)
        "visdom": ["visdom>=0.2.4"],
        # checking ONNX exports
        "export": ["onnx>=1.15", "onnxruntime>=1.17"],
        # --backend openvino / onnxruntime for test.py, stylize and compare (the generator is exported to ONNX)
        "openvino": ["onnx>=1.15", "openvino>=2024.0"],
        "onnxruntime": ["onnx>=1.15", "onnxruntime>=1.17"],
        # FID/KID in `analyze` (Inception weights supplied by the user; nothing is downloaded)
        "fid": ["torch-fidelity>=0.3"],
        # the local web app (cyclegan-culture app)
        "app": ["starlette>=0.37", "uvicorn>=0.29"],
        # train.py --tensorboard
        "tensorboard": ["tensorboard>=2.12"],
        # stylize CLIP.mp4: PyAV reads and writes video (FFmpeg inside its wheels), OpenCV's optical flow
        "video": ["av>=12", "opencv-python-headless>=4.8"],
        "test": ["pytest>=7", "onnx>=1.15", "onnxruntime>=1.17", "openvino>=2024.0", "torch-fidelity>=0.3", "starlette>=0.37",
                 "uvicorn>=0.29", "websocket-client>=1.6", "tensorboard>=2.12", "av>=12",
                 "opencv-python-headless>=4.8"],
    },
    entry_points={"console_scripts": ["cyclegan-culture=cyclegan_culture.cli:main"]},
)

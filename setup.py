from setuptools import find_packages, setup

setup(
    name="kiosk",
    version="0.1.0",
    description="Edge clock-in kiosk daemon: local face matching, signed and encrypted check-ins over MQTT",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["kiosk", "kiosk.*"]),
    package_data={"kiosk": ["py.typed"]},
    install_requires=[
        "dlib-bin>=19.24",
        "face-recognition-models>=0.3.0",
        "opencv-python-headless>=4.8",
        "numpy>=1.24",
        "pyzbar>=0.1.9",
        "segno>=1.5",
        "gpiozero>=2.0",
        "paho-mqtt>=2.0,<3",
        "sqlite-utils>=4.0",
        "cryptography>=42",
        "jwcrypto>=1.5",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "tenacity>=8.2",
        "pydantic>=2.5,<3",
        "uuid6>=2024.1",
    ],
    extras_require={
        # Needs libsystemd-dev and pkg-config to build; the daemon runs without
        # it (no journald, no sd_notify through it) when it is absent.
        "systemd": ["systemd-python>=235"],
        "test": ["systemd-python>=235"],
    },
    entry_points={
        "console_scripts": [
            "kiosk=kiosk.cli:main",
            "kiosk-admin=kiosk.admin:main",
        ]
    },
)

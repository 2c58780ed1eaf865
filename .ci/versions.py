"""Print the installed versions of the packages whose ranges CI tests (and `kernels`, which transformers 5.25 pulls)."""

import importlib.metadata

PACKAGES = ("torch", "transformers", "kernels", "peft", "trl", "accelerate", "datasets", "huggingface-hub")


def installed(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


if __name__ == "__main__":
    print("versions:", ", ".join(f"{package} {installed(package)}" for package in PACKAGES))

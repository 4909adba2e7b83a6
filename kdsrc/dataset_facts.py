"""What each dataset declares statically. Plans load, and every run's settings are checked,
without the data, a download or torch, so the checks that depend on the data (LDRLD's top-k below
the number of classes, CRD's negatives below the other-class training images) read these facts.
A module apart from :mod:`kdsrc.data` (which imports torch): a plan-cache hit imports neither.
A test compares the facts with the datasets it can load."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetFacts:
    name: str
    classes: int
    train_images: int
    test_images: int
    #: training images of the largest class: a sample of that class has
    #: ``train_images - largest_class`` training images of other classes
    largest_class: int

    @property
    def fewest_other_class(self) -> int:
        """The fewest training images of other classes any sample has (CRD's largest K)."""
        return self.train_images - self.largest_class


DATASET_FACTS: dict[str, DatasetFacts] = {
    # torchvision CIFAR-100: 500 training / 100 test images per class
    "cifar100": DatasetFacts("cifar100", classes=100, train_images=50_000, test_images=10_000,
                             largest_class=500),
    # torchvision CIFAR-10: 5,000 training / 1,000 test images per class
    "cifar10": DatasetFacts("cifar10", classes=10, train_images=50_000, test_images=10_000,
                            largest_class=5000),
    # kdsrc.data.digits: the fixed stratified 80/20 split of scikit-learn's digits
    "digits": DatasetFacts("digits", classes=10, train_images=1438, test_images=359,
                           largest_class=146),
}
DATASET_NAMES = tuple(DATASET_FACTS)

import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def _single_threaded_torch():
    """Batch-2 CIFAR forwards gain nothing from intra-op threads, and on a busy machine the
    thread synchronisation makes them 10-100x slower. Restored afterwards for other packages."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

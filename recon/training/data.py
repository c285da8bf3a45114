"""Training pairs (image, sinogram), simulated on the fly, deterministic per seed and position.

The training data is a **stream**: item ``k = 0, 1, 2, ...`` is a fixed function of the seed and
``k`` (never of the order of access, the process or the worker), so that the position in the
stream (items consumed so far) is all a checkpoint needs to continue it. Step ``s`` (from 0) uses
the items ``p + s B, ..., p + s B + B - 1`` of a global batch ``B`` (``p``: the position at the
start); rank ``r`` of ``W`` DistributedDataParallel processes takes the items ``r, r + W, ...`` of
each global batch (:class:`StreamSampler`), so that ``W`` processes with ``B / W`` items each see
the same global batch as one process with ``B``.

Sources:

- :class:`EllipseStream`: Adler and Oektem's random ellipses (``phantoms.RandomEllipsesDataset``)
  with their exact analytic sinograms plus noise, computed on the CPU (in DataLoader workers if
  asked). Unlimited (item ``k`` is phantom ``k``), or ``train_items = N`` phantoms visited in a
  fresh seeded order every epoch; a phantom keeps its noise realisation across epochs.
- :class:`ImageStream`: any tensor or dataset of images; the stream yields images and
  :class:`TrainingData` projects them on the training device (``y = A x`` with a
  ``known_ops.RayTransform``), then adds noise drawn from a generator seeded by (seed, image).
  With ``sinograms`` (the clean data of each image, e.g. exact line integrals of analytic
  phantoms or measured data), the stream yields ``(image, sinogram + noise)`` instead, with the
  same per-image noise generator, and nothing is projected: no inverse crime.

Everything here pickles, so a ``DataLoader`` may start its workers with ``spawn``.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

import known_ops as ko
import phantoms
from phantoms.noise import NoNoise, noise_from_dict
from phantoms.random_ellipses import RandomEllipsesDataset

from .config import target_geometry

__all__ = ["seeded_generator", "EllipseStream", "ImageStream", "StreamSampler", "TrainingData", "load_images",
           "load_sinograms", "validation_set", "training_data_from_config"]

UNLIMITED = 2**62  # length of an unlimited stream (indices are mixed into 64-bit seeds)
_ORDER, _NOISE, _VALIDATION = 1, 2, 3  # salts that keep the seeded streams apart


def seeded_generator(*entropy: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by a 64-bit mix of the integers ``entropy``
    (``numpy.random.SeedSequence``): independent streams for distinct tuples."""
    seed = int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(seed)


class _EpochOrder:
    """Stream position ``k`` -> item ``perm_e[k % n]``, a fresh seeded permutation per epoch ``e = k // n``."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, None

    def __call__(self, k: int) -> int:
        epoch = k // self.n
        if epoch != self._epoch:  # cached per epoch (per worker)
            self._perm = torch.randperm(self.n, generator=seeded_generator(self.seed, _ORDER, epoch)).tolist()
            self._epoch = epoch
        return self._perm[k % self.n]


def exact_projections(ellipses, geometry) -> torch.Tensor:
    """The exact line integrals (float32) of ``ellipses`` along every ray of a 2D ``geometry``."""
    if not ellipses:
        return torch.zeros(geometry.shape, dtype=torch.float32)
    rays = geometry.rays()
    return phantoms.ellipse_line_integrals(rays[..., 0:2], rays[..., 2:4], ellipses).float()


class EllipseStream(Dataset):
    """Stream item ``k`` -> ``(target, noisy exact sinogram)`` of a random ellipse phantom (float32);
    the target is the image, or with ``target_geometry`` the phantom's exact (noise-free) projections
    in that geometry.

    ``train_items=None``: item ``k`` is ``RandomEllipsesDataset(seed)[k]`` (no phantom repeats);
    ``train_items=N``: the ``N`` phantoms ``0..N-1`` in a fresh seeded order every epoch.
    ``ellipses`` are keyword arguments of ``phantoms.random_ellipses`` (``n_ellipses``, ...).
    """

    projects = False

    def __init__(self, volume, geometry, seed: int = 0, noise=None, train_items: int | None = None,
                 supersample: int = 4, ellipses: dict | None = None, target_geometry=None):
        self.dataset = RandomEllipsesDataset(train_items or UNLIMITED, volume, geometry, seed=seed, noise=noise,
                                             supersample=supersample, **(ellipses or {}))
        self.order = None if train_items is None else _EpochOrder(train_items, seed)
        self.target_geometry = target_geometry

    def __getitem__(self, k: int):
        index = k if self.order is None else self.order(k)
        image, sinogram = self.dataset[index]
        if self.target_geometry is not None:
            image = exact_projections(self.dataset.ellipses(index), self.target_geometry)
        return image, sinogram


class ImageStream(Dataset):
    """Stream item ``k`` -> ``(image, image index)`` from ``images``: a tensor ``(N, *volume.shape)``
    or a dataset whose items are images (or tuples whose first entry is the image); visited in a
    fresh seeded order every epoch. ``train_items`` uses only the first ``train_items`` images.
    ``sinograms`` (``(N, *geometry.shape)``, the clean data of each image): item ``k`` is then
    ``(image, sinogram + noise)``, the noise of image ``i`` drawn from the generator that
    :meth:`TrainingData.project` would use for it."""

    def __init__(self, images, seed: int = 0, train_items: int | None = None, sinograms=None, noise=None):
        n = len(images)
        self.projects = sinograms is None
        if sinograms is not None and len(sinograms) != n:
            raise ValueError(f"sinograms: {len(sinograms)} sinograms for {n} images; give one per image")
        self.sinograms, self.noise, self.seed = sinograms, NoNoise() if noise is None else noise, seed
        if train_items is not None:
            if train_items > n:
                raise ValueError(f"data.train_items = {train_items} but there are only {n} images")
            n = train_items
        if n < 1:
            raise ValueError("the image source holds no images")
        self.images = images
        self.order = _EpochOrder(n, seed)

    def __getitem__(self, k: int):
        index = self.order(k)
        image = self.images[index]
        if isinstance(image, (tuple, list)):
            image = image[0]
        image = torch.as_tensor(image, dtype=torch.float32)
        if self.sinograms is None:
            return image, index
        clean = torch.as_tensor(self.sinograms[index], dtype=torch.float32)
        return image, self.noise(clean, seeded_generator(self.seed, _NOISE, index))


class StreamSampler(Sampler):
    """The stream positions of rank ``rank`` of ``world_size`` for ``n_steps`` steps of
    ``global_batch`` items from position ``start``: step ``s`` gives
    ``start + s * global_batch + rank + j * world_size``, ``j < global_batch / world_size``."""

    def __init__(self, start: int, n_steps: int, global_batch: int, rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise ValueError(f"batch_size {global_batch} is not divisible by the number of processes {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
        self.start, self.n_steps, self.global_batch = start, n_steps, global_batch
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        for s in range(self.n_steps):
            first = self.start + s * self.global_batch + self.rank
            yield from range(first, first + self.global_batch, self.world_size)

    def __len__(self) -> int:
        return self.n_steps * (self.global_batch // self.world_size)


class TrainingData:
    """Batches ``(x, y)`` on ``device`` for one rank: ``x`` ``(B/W, *volume.shape)``, ``y``
    ``(B/W, *geometry.shape)``, float32. ``workers > 0`` simulates in that many ``DataLoader``
    workers started with ``spawn``."""

    def __init__(self, stream, volume, geometry, noise=None, seed: int = 0, global_batch: int = 1, rank: int = 0,
                 world_size: int = 1, device="cpu", workers: int = 0, target_geometry=None):
        self.stream, self.volume, self.geometry = stream, volume, geometry
        self.noise = NoNoise() if noise is None else noise
        self.seed, self.global_batch, self.rank, self.world_size = seed, global_batch, rank, world_size
        self.device, self.workers = torch.device(device), workers
        StreamSampler(0, 0, global_batch, rank, world_size)  # validates the batch split now
        self.operator = ko.RayTransform(volume, geometry).to(self.device) if stream.projects else None
        # Image sources with projection targets: the target is A_target x (noise-free).
        self.target_operator = (ko.RayTransform(volume, target_geometry).to(self.device)
                                if stream.projects and target_geometry is not None else None)

    def loader(self, start: int, n_steps: int) -> DataLoader:
        """The DataLoader of ``n_steps`` batches from stream position ``start``."""
        sampler = StreamSampler(start, n_steps, self.global_batch, self.rank, self.world_size)
        extra = dict(multiprocessing_context="spawn") if self.workers else {}
        # A generator of its own, so that making the loader draws nothing from torch's global RNG.
        return DataLoader(self.stream, batch_size=self.global_batch // self.world_size, sampler=sampler,
                          num_workers=self.workers, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.seed), **extra)

    def batches(self, start: int, n_steps: int):
        """Iterate over ``n_steps`` batches ``(x, y)`` on the device, from stream position ``start``."""
        for first, second in self.loader(start, n_steps):
            x = first.to(self.device, non_blocking=True)
            if self.operator is None:
                yield x, second.to(self.device, non_blocking=True)
            else:
                y = self.project(x, second.tolist())
                if self.target_operator is not None:
                    with torch.no_grad():
                        x = self.target_operator(x)
                yield x, y

    @torch.no_grad()
    def project(self, x: torch.Tensor, indices) -> torch.Tensor:
        """``A x`` plus noise, item ``j`` with the generator of image ``indices[j]``."""
        y = self.operator(x)
        return torch.stack([self.noise(y[j], seeded_generator(self.seed, _NOISE, i)) for j, i in enumerate(indices)])


def load_images(path, volume, key: str = "data.images") -> torch.Tensor:
    """Images ``(N, *volume.shape)`` from a ``.npy`` file or a ``.pt`` file holding one tensor
    (read with ``weights_only=True``), as float32."""
    return _load_stack(path, tuple(volume.shape), key, "image")


def load_sinograms(path, geometry, key: str = "data.sinograms") -> torch.Tensor:
    """Sinograms ``(N, *geometry.shape)`` from a ``.npy`` or ``.pt`` file, as :func:`load_images`."""
    return _load_stack(path, tuple(geometry.shape), key, "sinogram")


def _load_stack(path, shape: tuple, key: str, what: str) -> torch.Tensor:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{key}: {what} file {path!r} does not exist")
    if path.endswith(".npy"):
        stack = torch.from_numpy(np.load(path, allow_pickle=False))
    else:
        stack = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(stack, torch.Tensor) or tuple(stack.shape[1:]) != shape:
        got = tuple(stack.shape) if isinstance(stack, torch.Tensor) else type(stack).__name__
        raise ValueError(f"{key}: {path!r} must hold a tensor of shape (N, {', '.join(map(str, shape))}), got {got}")
    return stack.float()


def validation_set(config: dict, volume, geometry, images=None):
    """The fixed validation set of a resolved config: ``(names, x, y)`` with ``x`` ``(n, *volume.shape)``
    and ``y`` ``(n, *geometry.shape)`` float32 on the CPU. In this order: the modified Shepp-Logan
    phantom, ``random_ellipses`` held-out phantoms (``RandomEllipsesDataset`` with the validation
    seed), the images of ``data.validation.images`` and ``images`` (projected by ``A``); all with
    the training noise model, drawn from generators seeded by the validation seed."""
    data, val = config["data"], config["data"]["validation"]
    noise = noise_from_dict(data["noise"])
    target = target_geometry(config)
    names, xs, ys = [], [], []
    if val["shepp_logan"]:
        names.append("shepp_logan")
        xs.append(phantoms.shepp_logan(volume, supersample=data["supersample"]) if target is None
                  else phantoms.shepp_logan_projections(target, volume=volume, dtype=torch.float32))
        clean = phantoms.shepp_logan_projections(geometry, volume=volume, dtype=torch.float32)
        ys.append(noise(clean, seeded_generator(val["seed"], _VALIDATION, 0)))
    if val["random_ellipses"]:
        held_out = RandomEllipsesDataset(val["random_ellipses"], volume, geometry, seed=val["seed"], noise=noise,
                                         supersample=data["supersample"], **data["ellipses"])
        for k in range(len(held_out)):
            names.append(f"ellipses_{k}")
            x, y = held_out[k]
            xs.append(x if target is None else exact_projections(held_out.ellipses(k), target))
            ys.append(y)
    extra = [load_images(val["images"], volume, "data.validation.images")] if val["images"] else []
    if images is not None:
        extra.append(torch.as_tensor(images, dtype=torch.float32).reshape(-1, *volume.shape))
    if extra:
        extra = torch.cat(extra)
        with torch.no_grad():
            clean = ko.RayTransform(volume, geometry)(extra)
            if target is not None:
                extra = ko.RayTransform(volume, target)(extra)
        for k in range(len(extra)):
            names.append(f"image_{k}")
            xs.append(extra[k])
            ys.append(noise(clean[k], seeded_generator(val["seed"], _VALIDATION, 1, k)))
    if not names:
        return names, torch.empty(0, *(volume.shape if target is None else target.shape)), torch.empty(0, *geometry.shape)
    for name, x in zip(names, xs):
        if float(x.max()) == float(x.min()):
            # PSNR and SSIM take the data range from the truth: a constant one has none (recon.metrics).
            raise ValueError(f"config key 'data.validation': the validation image {name!r} is constant; PSNR and SSIM "
                             "need an image with a range of values")
    return names, torch.stack(xs).float(), torch.stack(ys).float()


def training_data_from_config(config: dict, volume, geometry, rank: int = 0, world_size: int = 1, device="cpu",
                              images=None) -> TrainingData:
    """The :class:`TrainingData` of a resolved config; ``images`` (a tensor or dataset) replaces
    ``data.images`` for the source ``"images"``."""
    data, seed = config["data"], config["seed"]
    noise = noise_from_dict(data["noise"])
    if data["source"] == "random_ellipses":
        if images is not None:
            raise ValueError("images were given but data.source is 'random_ellipses'; set data.source to 'images'")
        try:
            stream = EllipseStream(volume, geometry, seed, noise, data["train_items"], data["supersample"],
                                   data["ellipses"], target_geometry(config))
        except (TypeError, ValueError) as error:
            raise ValueError(f"config key 'data.ellipses': {error}") from None
    else:
        if images is None:
            if data["images"] is None:
                raise ValueError("config key 'data.images': data.source 'images' needs an image file "
                                 "(or pass images= to fit)")
            images = load_images(data["images"], volume)
        sinograms = load_sinograms(data["sinograms"], geometry) if data["sinograms"] else None
        stream = ImageStream(images, seed, data["train_items"], sinograms, noise)
    return TrainingData(stream, volume, geometry, noise, seed, config["batch_size"], rank, world_size, device,
                        data["workers"], target_geometry(config))

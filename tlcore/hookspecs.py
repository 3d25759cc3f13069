"""The tlapp plugin contract: every hook a plugin may implement.

A plugin is a module (or object) with functions decorated by ``tlcore.hookimpl``
whose names match the specs below, published under the ``tlapp.plugins``
entry-point group::

    [project.entry-points."tlapp.plugins"]
    mydomain = "mydomain_tlapp.plugin"

``register_*`` hooks receive a ``register`` callback; call it once per thing you
provide. Implementing a hook that is not declared here is an error at load time.
"""

import pluggy

hookspec = pluggy.HookspecMarker("tlapp")
hookimpl = pluggy.HookimplMarker("tlapp")


@hookspec
def register_tasks(register):
    """Offer tasks: ``register(task)`` with a ``tlcore.Task``.

    A task carries its default recipe, its bundled sample data and the code that
    builds data, model, loss, metrics and predictions. Example::

        @hookimpl
        def register_tasks(register):
            register(DicomClassification())
    """


@hookspec
def register_dataset_formats(register):
    """Offer dataset readers by format name: ``register(name, reader, description)``.

    ``reader(path, **options)`` indexes a dataset on disk; the tasks that accept
    the format document what it returns. Example::

        register("kitti", read_kitti_folder, "KITTI 2D objects: image_2/ + label_2/")
    """


@hookspec
def register_backbones(register):
    """Offer pretrained networks: ``register(tlcore.Backbone(...))``.

    A backbone says how to build the network, which weight sources it has
    (``weights={"imagenet": load_fn}``), its input normalisation, and its
    parameter groups from input to output, which the transfer strategies use.
    Example::

        register(Backbone(name="resnet18", build=make_resnet18,
                          weights={"imagenet": load_resnet18_weights},
                          parameter_groups=resnet_stages, mean=..., std=...))
    """


@hookspec
def register_heads(register):
    """Offer output heads: ``register(name, factory, description)``.

    ``factory(in_features, num_outputs, **options)`` returns an ``nn.Module``
    mapping pooled backbone features to outputs. Example::

        register("mlp", lambda d, n, hidden=256: nn.Sequential(
            nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, n)), "two-layer MLP")
    """


@hookspec
def register_augmentations(register):
    """Offer augmentation pipelines by name: ``register(name, factory, description)``.

    ``factory(image_size, **options)`` returns a callable pipeline (typically an
    ``albumentations.Compose``). Example::

        register("medical-light", medical_light, "small affine, contrast, noise")
    """


@hookspec
def register_metrics(register):
    """Offer metrics: ``register(name, factory, description)``.

    ``factory(num_classes, multilabel, threshold)`` returns a
    ``torchmetrics.Metric``; tasks ask for metrics by name. A metric whose
    ``compute()`` returns NaN (whole, or for one class of a per-class tensor)
    is reported as null, undefined; one that lists the class indices it could
    not define in an ``undefined`` attribute has them in ``undefined_classes``
    (and, with a ``lacks`` text attribute, a reason in ``undefined``), and one
    with an ``averaged_over`` attribute has that count in ``averaged_over``.
    The evaluator keeps one object per metric and calls ``reset()``,
    ``update(probs, target)`` and ``compute()`` for every bootstrap resample of
    the final metrics, so ``reset()`` must forget everything. (The built-in
    ``sensitivity`` and ``specificity`` factories also take ``positive_class``,
    the index of ``model.positive_class``.) Example::

        register("balanced_accuracy", lambda num_classes, multilabel, threshold:
                 MulticlassAccuracy(num_classes, average="macro"), "mean recall")
    """


@hookspec
def register_strategies(register):
    """Offer transfer strategies: ``register(strategy_class)``.

    A strategy (subclass of ``tlcore.Strategy``) says, epoch by epoch, which
    parameter groups train and at which learning rate. Example::

        register(HeadOnlyThenAll)
    """


@hookspec
def register_methods(register):
    """Offer training methods: ``register(method_class)``, a subclass of ``tlcore.Method``.

    A method is what a step's loss needs beyond the model and the labelled batch:
    extra modules moved to the device with the model (a teacher, a domain
    discriminator), extra data streams drawn alongside the training loader
    (unlabelled target data) and the loss computed from all of them. The job
    picks one with ``method.name`` (default ``supervised``, the task's own loss);
    its options are ``method.<key>``. Example::

        @hookimpl
        def register_methods(register):
            register(DomainAdversarial)
    """


@hookspec
def on_run_start(run):
    """Called once before the first epoch, with the ``tlcore.Run`` (config, paths, model).

    Example: open an experiment tracker and log ``run.config``.
    """


@hookspec
def on_epoch_end(run, epoch, logs):
    """Called after each epoch's validation with the epoch number and its logs dict.

    ``logs`` holds ``train_loss``, validation metrics and ``samples_per_second``.
    Raising here stops the run (the last checkpoint stays valid for ``--resume``).
    Example::

        @hookimpl
        def on_epoch_end(run, epoch, logs):
            tracker.log(step=epoch, loss=logs["train_loss"], **logs["val"])
    """


@hookspec
def on_run_end(run, metrics):
    """Called after the final evaluation with the metrics dict written to ``metrics.json``.

    Example: render a report into ``run.directory``.
    """

"""Compiled training (core.compiling): where it is used, that it computes what eager PyTorch computes, and that a
failed compilation falls back to eager without failing the run."""
import json

import pytest
import torch
from torch import nn

from core import compiling
from core.compiling import Compilation, TrainingSteps, plan
from core.data import scan_dataset
from core.folding import FoldedEvaluation
from core.runs import read_run, save_run
from core.train import TrainConfig, train

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def scan(tiny_dataset):
    return scan_dataset(tiny_dataset)


def config(**overrides) -> TrainConfig:
    values = dict(backbone="mobilenet_v2", scenario="finetune", epochs=2, workers=0, device="cpu", lr=0.01)
    return TrainConfig(**{**values, **overrides})


@pytest.fixture
def compilers_present(monkeypatch):
    monkeypatch.setattr(compiling, "missing_compiler", lambda device: None)


def test_auto_compiles_only_where_it_was_measured_to_pay(compilers_present, monkeypatch):
    on_cpu = plan("auto", fast=True, train_backbone=True, device=CPU, steps=10**6)
    assert not on_cpu.used and "measured slower" in on_cpu.reason
    on_cuda = plan("auto", fast=True, train_backbone=True, device=CUDA, steps=10**6)
    assert not on_cuda.used and "measured slower" in on_cuda.reason  # on an H200, compiling included
    long_run = 1000
    monkeypatch.setitem(compiling.PAYS_FROM_STEPS, "cuda", long_run)  # as when a GPU measurement finds it pays
    assert plan("auto", fast=True, train_backbone=True, device=CUDA, steps=long_run).used
    short = plan("auto", fast=True, train_backbone=True, device=CUDA, steps=long_run - 1)
    assert not short.used and "too few" in short.reason
    assert not plan("auto", fast=True, train_backbone=False, device=CUDA, steps=long_run).used
    assert not plan("on", fast=False, train_backbone=True, device=CPU, steps=long_run).used
    assert not plan("off", fast=True, train_backbone=True, device=CUDA, steps=long_run).used
    assert plan("on", fast=True, train_backbone=True, device=CPU, steps=1).used


def test_without_a_cpp_compiler_nothing_is_compiled_even_when_asked(monkeypatch):
    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    decision = plan("on", fast=True, train_backbone=True, device=CPU, steps=1000)
    assert not decision.used and decision.reason == "no C++ compiler was found"


def test_a_recipe_with_an_unknown_compile_choice_is_refused():
    with pytest.raises(Exception, match="compile must be one of auto, on, off"):
        config(compile="fast")


class SmallNet(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False), nn.BatchNorm2d(8),
                         nn.ReLU6(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def sgd_steps(model: nn.Module, steps: TrainingSteps, batches) -> list[torch.Tensor]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def forward_backward(network, inputs, labels):
        optimizer.zero_grad(set_to_none=True)
        result = network(inputs)
        nn.functional.cross_entropy(result, labels).backward()
        return result

    outputs = []
    for inputs, labels in batches:
        outputs.append(steps.run(forward_backward, inputs, labels).detach())
        optimizer.step()
    return outputs


def test_compiled_and_eager_training_steps_give_matching_outputs_and_weights():
    if reason := compiling.missing_compiler(CPU):
        pytest.fail(f"inductor cannot compile on this machine: {reason}")
    torch.manual_seed(0)
    eager = SmallNet().to(memory_format=torch.channels_last)
    compiled = SmallNet().to(memory_format=torch.channels_last)
    compiled.load_state_dict(eager.state_dict())
    batches = [(torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last), torch.randint(0, 2, (4,)))
               for _ in range(3)]
    decision = Compilation(True, "switched on")
    eager_outputs = sgd_steps(eager, TrainingSteps(eager, Compilation(False, "switched off")), batches)
    compiled_outputs = sgd_steps(compiled, TrainingSteps(compiled, decision), batches)
    assert decision.used and decision.failure is None and decision.seconds > 0
    for ours, theirs in zip(compiled_outputs, eager_outputs):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    for (name, ours), theirs in zip(compiled.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5, msg=name)
    with torch.no_grad():  # the weights the optimiser updated are the eager model's own
        assert not torch.equal(compiled[0].weight, SmallNet()[0].weight)


def failing_backend(graph_module, example_inputs):
    raise RuntimeError("simulated: the C++ compiler crashed")


def test_a_failed_compilation_falls_back_to_eager_and_the_run_completes(scan, random_weights_dir, monkeypatch,
                                                                        compilers_present):
    monkeypatch.setattr(compiling, "BACKEND", failing_backend)
    with pytest.warns(RuntimeWarning, match="training goes on without compiling"):
        fallen = train(config(compile="on"), scan, random_weights_dir)
    eager = train(config(compile="off"), scan, random_weights_dir)
    assert fallen.status == "completed" and len(fallen.history) == 2
    assert not fallen.compilation.used and "simulated: the C++ compiler crashed" in fallen.compilation.failure
    assert fallen.compilation.describe().startswith("no: compiling failed")
    assert [(e.train_loss, e.val_loss) for e in fallen.history] == [(e.train_loss, e.val_loss) for e in eager.history]


def test_the_run_record_says_whether_training_was_compiled(scan, random_weights_dir, tmp_path):
    result = train(config(scenario="frozen", compile="on"), scan, random_weights_dir)
    record = save_run(result, scan, tmp_path)
    again = read_run(record.path)
    assert again.compilation == Compilation(False, "only the last layer trains: there is little to compile")
    assert again.summary()["compiled"] == "no"
    data = json.loads((record.path / "run.json").read_text())
    del data["compilation"]  # as runs saved before compiled training existed
    (record.path / "run.json").write_text(json.dumps(data))
    assert read_run(record.path).compilation is None and read_run(record.path).summary()["compiled"] == "-"


def test_evaluation_with_batchnorm_folded_gives_the_same_answers():
    torch.manual_seed(0)
    model = SmallNet()
    model.train()
    model(torch.randn(8, 3, 32, 32))  # BatchNorm statistics other than the initial ones
    pictures = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        judge = FoldedEvaluation(model)
        torch.testing.assert_close(judge()(pictures), model.eval()(pictures), rtol=1e-4, atol=1e-5)
        called = [judge().get_submodule(node.target) for node in judge().graph.nodes if node.op == "call_module"]
        assert not any(isinstance(layer, nn.BatchNorm2d) for layer in called) and len(called) == 7
        model.train()
        model(torch.randn(8, 3, 32, 32))  # new statistics, as after another epoch
        model[0].weight.mul_(1.5)
        torch.testing.assert_close(judge()(pictures), model.eval()(pictures), rtol=1e-4, atol=1e-5)
    assert sum(isinstance(module, nn.BatchNorm2d) for module in model.modules()) == 2  # the model is left as it was

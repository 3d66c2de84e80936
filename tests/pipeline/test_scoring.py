import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from changesweep.model.format import ModelDirError, export_model_dir, read_model_info
from changesweep.pipeline.elements import PROB_SCALE
from changesweep.pipeline.elements import ChipKey
from changesweep.pipeline.scoring import (ScoreChips, make_model_handler, statistics_update,
                                         to_chip_score)
from changesweep.transforms import preprocessing as pp

SIZE, BANDS = 16, 2


class MeanDiff(tf.Module):
  """A tiny 'model': change probability rises with the mean band difference."""

  def __call__(self, before, after):
    return tf.sigmoid(4.0 * tf.reduce_mean(after - before, axis=-1))


def statistics_dir(tmp_path_factory, seed: int, mean: float, std: float) -> str:
  """A transform_fn written by tf.Transform over 3 random chips of this mean and std."""
  rng = np.random.default_rng(seed)
  inst = [pp.make_instance(str(i), rng.normal(mean, std, (SIZE, SIZE, BANDS)),
                           rng.normal(mean, std, (SIZE, SIZE, BANDS)), np.ones((SIZE, SIZE)))
          for i in range(3)]
  return pp.analyze_to_dir(inst, BANDS, SIZE, str(tmp_path_factory.mktemp("t")))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
  tdir = statistics_dir(tmp_path_factory, 1, 0.0, 1.0)
  out = str(tmp_path_factory.mktemp("m") / "tiny")
  info = export_model_dir(out, MeanDiff(), tdir, {
      "model_id": "tiny", "version": "0", "kind": "cva", "bands": ["B1", "B2"],
      "chip_size": SIZE, "threshold": 0.5})
  return info


def chip(before, after, valid):
  """A model input as `chips.read_model_input` makes it: (before, after, valid)."""
  return (np.full((SIZE, SIZE, BANDS), before, np.float32),
          np.full((SIZE, SIZE, BANDS), after, np.float32),
          np.full((SIZE, SIZE), valid, np.float32))


def test_handler_scores_a_batch_and_zeroes_invalid_pixels(tiny_model):
  handler = make_model_handler(tiny_model.saved_model_dir, batch_size=4)
  model = handler.load_model()
  results = list(handler.run_inference(
      [("p/0", chip(0, 1, 1)), ("p/1", chip(0, 0, 1)), ("p/2", chip(0, 1, 0))], model))
  probs = {k: r.inference[..., 0].mean() for k, r in results}
  assert probs["p/0"] == pytest.approx(1 / (1 + np.exp(-4)), rel=1e-5)
  assert probs["p/1"] == pytest.approx(0.5, rel=1e-5)
  assert probs["p/2"] == 0.0


def test_run_inference_in_a_pipeline_gives_chip_scores(tiny_model):
  handler = make_model_handler(tiny_model.saved_model_dir, batch_size=2)
  with TestPipeline(runner="FnApiRunner") as p:
    key = lambda pair_id, index: ChipKey(pair_id, index, SIZE, SIZE, "loc", "2020-01-01")
    out = (p | beam.Create([(key("pairA", 0), chip(0, 2, 1)), (key("pairA", 1), chip(0, -2, 1)),
                            (key("pairB", 0), chip(1, 1, 1))])
           | RunInference(handler)
           | beam.Map(to_chip_score)
           | beam.MapTuple(lambda k, s: (k.pair_id, s.chip_index, int(s.prob.max()))))
    assert_that(out, equal_to([("pairA", 0, round(PROB_SCALE / (1 + np.exp(-8)))),
                               ("pairA", 1, round(PROB_SCALE / (1 + np.exp(8)))),
                               ("pairB", 0, PROB_SCALE // 2)]))


@pytest.mark.parametrize("sharing", [{"model_copies": 1}, {"large_model": True}])
def test_a_model_shared_across_processes_scores_chips(tiny_model, sharing):
  # Beam then serves the model through a proxy that forwards public method calls only.
  handler = make_model_handler(tiny_model.saved_model_dir, batch_size=2, **sharing)
  assert handler.share_model_across_processes()
  with TestPipeline(runner="FnApiRunner") as p:
    key = lambda pair_id: ChipKey(pair_id, 0, SIZE, SIZE, "loc", "2020-01-01")
    results, dlq = (p | beam.Create([(key("pairA"), chip(0, 2, 1)), (key("pairB"), chip(1, 1, 1))])
                    | RunInference(handler).with_exception_handling())
    out = results | beam.Map(to_chip_score) | beam.MapTuple(
        lambda k, s: (k.pair_id, s.chip_index, int(s.prob.max())))
    assert_that(out, equal_to([("pairA", 0, round(PROB_SCALE / (1 + np.exp(-8)))),
                               ("pairB", 0, PROB_SCALE // 2)]), label="scores")
    assert_that(dlq.failed_inferences, equal_to([]), label="no failures")


def test_serving_signature_over_raw_pixels_embeds_the_transform(tiny_model):
  loaded = tf.saved_model.load(tiny_model.saved_model_dir)
  raw = np.zeros((1, SIZE, SIZE, BANDS), np.float32)
  prob = loaded.signatures["serving_default"](before=raw, after=raw)["change_prob"]
  assert prob.shape == (1, SIZE, SIZE)
  assert np.allclose(prob.numpy(), 0.5)


def test_model_directory_is_validated(tiny_model, tmp_path):
  assert read_model_info(tiny_model.path).model_id == "tiny"
  with pytest.raises(ModelDirError, match="does not exist"):
    read_model_info(str(tmp_path / "nope"))
  (tmp_path / "metadata.json").write_text('{"format": "x"}')
  with pytest.raises(ModelDirError, match="missing field"):
    read_model_info(str(tmp_path))


@pytest.fixture(scope="module")
def shifted_statistics(tmp_path_factory):
  """A transform_fn over chips of mean 5, std 2 (the tiny model's own: mean 0, std 1)."""
  return statistics_dir(tmp_path_factory, 2, 5.0, 2.0)


def normalised_then_scored(tiny_model, transform_dir, raw):
  """What the old path gave: tf.Transform's normalisation, then the `normalized` signature."""
  before, after, valid = raw
  b, a = pp.load_normalizer(transform_dir)(before[None], after[None], valid[None])
  model = make_model_handler(tiny_model.saved_model_dir, batch_size=1).load_model()
  return model.score(b.numpy(), a.numpy())[0]


def test_handler_with_a_transform_fn_scores_raw_chips(tiny_model):
  handler = make_model_handler(tiny_model.saved_model_dir, batch_size=4,
                               transform_dir=tiny_model.transform_dir)
  rng = np.random.default_rng(3)
  raw = (rng.normal(0, 1, (SIZE, SIZE, BANDS)).astype(np.float32),
         rng.normal(0.5, 1, (SIZE, SIZE, BANDS)).astype(np.float32),
         np.ones((SIZE, SIZE), np.float32))
  [(_, result)] = handler.run_inference([("p/0", raw)], handler.load_model())
  assert np.allclose(result.inference[..., 0],
                     normalised_then_scored(tiny_model, tiny_model.transform_dir, raw), atol=1e-6)


def test_statistics_side_input_replaces_the_models_transform_fn(tiny_model, shifted_statistics):
  # The sweep's archive statistics reach RunInference as a model update: chips must be
  # normalised with them, not with the statistics the model was trained with.
  handler = make_model_handler(tiny_model.saved_model_dir, batch_size=2,
                               transform_dir=tiny_model.transform_dir)
  raw = (np.full((SIZE, SIZE, BANDS), 5.0, np.float32), np.full((SIZE, SIZE, BANDS), 5.5,
                                                                  np.float32),
         np.ones((SIZE, SIZE), np.float32))
  expected = normalised_then_scored(tiny_model, shifted_statistics, raw)
  own = normalised_then_scored(tiny_model, tiny_model.transform_dir, raw)
  assert abs(expected.mean() - own.mean()) > 0.1  # the two statistics score differently
  key = ChipKey("pairA", 0, SIZE, SIZE, "loc", "2020-01-01")
  with TestPipeline(runner="FnApiRunner") as p:
    statistics = statistics_update(p | "Written" >> beam.Create([None]), shifted_statistics)
    scores, dlq = (p | beam.Create([(key, raw)])
                   | ScoreChips(handler, statistics))
    out = scores | beam.MapTuple(lambda k, s: int(s.prob.mean().round()))
    assert_that(out, equal_to([int(np.round(expected * PROB_SCALE).mean().round())]),
                label="scores")
    assert_that(dlq.failed_inferences, equal_to([]), label="no failures")


class ScaledMeanDiff(tf.Module):
  """MeanDiff with its scale in a variable, as a trained network holds its weights."""

  def __init__(self):
    super().__init__()
    self.scale = tf.Variable(4.0)

  def __call__(self, before, after):
    return tf.sigmoid(self.scale * tf.reduce_mean(after - before, axis=-1))


def test_threads_sharing_one_model_all_score(tiny_model, tmp_path):
  """`--direct_running_mode multi_threading`: the worker threads of a process share one model
  (Beam's shared handle), and its first calls come at once. Loading it twice dropped the first
  copy's variables under the other thread ("Called a function referencing variables which
  have been deleted") and the pairs of those chips became dead letters."""
  import threading

  info = export_model_dir(str(tmp_path / "scaled"), ScaledMeanDiff(), tiny_model.transform_dir,
                          {**tiny_model.raw, "model_id": "scaled"})
  handler = make_model_handler(info.saved_model_dir, batch_size=1,
                               transform_dir=info.transform_dir)
  model = handler.load_model()  # nothing is loaded until the first call
  raw = chip(0.0, 1.0, 1.0)
  threads = 4
  start = threading.Barrier(threads)
  got, errors = [], []

  def score():
    start.wait()
    try:
      for _ in range(3):
        [(_, result)] = handler.run_inference([("p/0", raw)], model)
        got.append(result.inference)
    except Exception as e:  # noqa: BLE001 - the test reports any failure below
      errors.append(e)

  workers = [threading.Thread(target=score) for _ in range(threads)]
  for t in workers:
    t.start()
  for t in workers:
    t.join(120)
  assert not errors, errors[0]
  assert len(got) == 3 * threads
  assert all(np.array_equal(g, got[0]) for g in got)

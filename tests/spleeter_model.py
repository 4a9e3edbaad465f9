"""Build a randomly initialised Spleeter 2stems model in Spleeter's own checkpoint format (test
fixture).

Run with the Spleeter interpreter
(``.venv-spleeter/bin/python tests/spleeter_model.py MODEL_PATH``): it builds Spleeter's 2stems
prediction graph with Spleeter's own model code, initialises every variable at random (seeded),
and saves them with a TF Saver into
``MODEL_PATH/2stems/`` plus the ``.probe`` marker - the layout of the v1.4.0 release's 2stems.tar.gz
(checkpoint, model.index, model.data-00000-of-00001, model.meta). The weights are random: the output
is not a separation, only a real run of Spleeter's network. Never commit the result (~80 MB).
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def build(model_path: Path, seed: int = 0) -> Path:
    import tensorflow as tf
    from spleeter.model import EstimatorSpecBuilder, InputProviderFactory
    from spleeter.utils.configuration import load_configuration

    params = load_configuration("spleeter:2stems")
    params["MWF"] = False
    out = Path(model_path) / "2stems"
    out.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(seed)
        features = InputProviderFactory.get(params).get_input_dict_placeholders()
        EstimatorSpecBuilder(features, params).build_predict_model()
        tf.compat.v1.train.get_or_create_global_step()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(sess, str(out / "model"))
    (out / ".probe").write_text("OK")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: spleeter_model.py MODEL_PATH")
    print(build(Path(sys.argv[1])))

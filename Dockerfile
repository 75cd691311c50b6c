# The image every component runs in on Kubeflow Pipelines v2 / Vertex AI
# (pipeline_runner.py compile --image ...). Not built or run in this repository's CI:
# the development machines have no container engine.
FROM python:3.10-slim

WORKDIR /pipeline
COPY requirements.lock .
RUN pip install --no-cache-dir "pip==24.2" && pip install --no-cache-dir -r requirements.lock

COPY data/ data/
COPY components/ components/
COPY pipeline/ pipeline/
COPY pipeline_runner.py pyproject.toml ./

# The project's packages are imported by module path (Trainer run_fn, Beam DoFns), and
# TFRS needs Keras 2 in every process, including Beam workers started by the runner.
ENV PYTHONPATH=/pipeline \
    TF_USE_LEGACY_KERAS=1

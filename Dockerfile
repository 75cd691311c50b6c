# The image every component runs in on Kubeflow Pipelines v2 / Vertex AI
# (pipeline_runner.py compile --image IMAGE), and the Beam SDK container of Dataflow
# workers (--beam-arg=--sdk_container_image=IMAGE). Not built or run in this
# repository's CI: the development machines have no container engine.
#
# GPU variant (for Trainers sent to Vertex AI Training with accelerators, see
# components/trainer/vertex.py):  docker build --build-arg ACCELERATOR=gpu -t IMAGE:gpu .
# adds TensorFlow 2.16.2's CUDA 12.3 / cuDNN 8.9 libraries as the pinned NVIDIA wheels of
# its `and-cuda` extra; the GPU driver comes from the host (Vertex AI's GPU machines and
# the NVIDIA container runtime provide it). Never built here (no container engine).
FROM python:3.10-slim
ARG ACCELERATOR=cpu

WORKDIR /pipeline
COPY requirements.lock .
RUN pip install --no-cache-dir "pip==24.2" && pip install --no-cache-dir -r requirements.lock
RUN case "$ACCELERATOR" in \
      cpu) ;; \
      gpu) pip install --no-cache-dir "tensorflow[and-cuda]==2.16.2" ;; \
      *) echo "ACCELERATOR must be cpu or gpu, not $ACCELERATOR" >&2; exit 1 ;; \
    esac

# Dataflow starts its workers through the Beam SDK's boot program, which must match the
# installed apache-beam (2.59.0, requirements.lock). Kubeflow and Vertex run the TFX
# entry point named in the compiled spec's `command`, which replaces this ENTRYPOINT.
COPY --from=apache/beam_python3.10_sdk:2.59.0 /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]

COPY data/ data/
COPY components/ components/
COPY pipeline/ pipeline/
COPY pipeline_runner.py pyproject.toml ./

# The project's packages are imported by module path (Trainer run_fn, Beam DoFns), and
# TFRS needs Keras 2 in every process: TFX's container entry point imports TensorFlow
# before any module of this repository could set the variable.
ENV PYTHONPATH=/pipeline \
    TF_USE_LEGACY_KERAS=1

# statemachine-server in a container.
#
#   docker build -t statemachine-server .
#   docker run --rm -p 12345:12345 statemachine-server
#
# The default command serves the built-in echo spec. Every interface is listened on
# (STATEMACHINE_SERVER_HOST below: the environment's value, under the command line's and
# over the spec's), so a mounted spec is reachable from outside the container too:
#
#   docker run --rm -p 12345:12345 -v "$PWD/specs:/specs:ro" statemachine-server \
#       run /specs/chat.yaml
#   docker run --rm -p 12345:12345 -p 9100:9100 -e STATEMACHINE_SERVER_METRICS=0.0.0.0:9100 \
#       -e STATEMACHINE_SERVER_LOG_FORMAT=json statemachine-server
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STATEMACHINE_SERVER_HOST=0.0.0.0

WORKDIR /src
COPY . /src
RUN pip install --no-cache-dir ".[fast]" \
    && rm -rf /src

RUN useradd --create-home --uid 10001 --user-group app \
    && mkdir /specs
WORKDIR /home/app
USER app

EXPOSE 12345
ENTRYPOINT ["statemachine-server"]
CMD ["run"]

# statemachine-server in a container.
#
#   docker build -t statemachine-server .
#   docker run --rm -p 12345:12345 statemachine-server
#
# The default command serves the built-in echo spec on every interface. To serve your own
# spec, mount its folder at /specs and name it (keep --host 0.0.0.0, or set server.host in
# the spec, so that the port is reachable from outside the container):
#
#   docker run --rm -p 12345:12345 -v "$PWD/specs:/specs:ro" statemachine-server \
#       run /specs/chat.yaml --host 0.0.0.0
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

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
CMD ["run", "--host", "0.0.0.0"]

# The gateway node image (also runs the demo services).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mesh ./mesh
COPY bridges ./bridges
COPY config ./config
COPY demo ./demo
RUN pip install --no-cache-dir .
ENV PYTHONPATH=/app
EXPOSE 7401
ENTRYPOINT ["mesh"]
CMD ["run", "config/shop.yaml"]

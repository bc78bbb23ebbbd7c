# One image for all four services: `sir serve <service>` picks one.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml ./
COPY shared shared
COPY services services
RUN pip install --no-cache-dir . && rm -rf /root/.cache
ENV SIR_HOST=0.0.0.0
USER nobody
ENTRYPOINT ["sir"]
CMD ["serve", "intake"]

# One image for all five services: `sir serve <service>` picks one.
# The console's design system and each /docs' Swagger UI, from package-lock.json.
FROM node:20-slim AS assets
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --ignore-scripts

FROM python:3.11-slim
WORKDIR /app
COPY --from=assets /app/node_modules node_modules
COPY pyproject.toml ./
COPY shared shared
COPY services services
RUN pip install --no-cache-dir . && rm -rf /root/.cache
ENV SIR_HOST=0.0.0.0
USER nobody
ENTRYPOINT ["sir"]
CMD ["serve", "intake"]

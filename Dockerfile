# knm's image: every service is `knm <command>` (see compose.yaml).
FROM python:3.11-slim
WORKDIR /opt/knm
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY knm ./knm
COPY services ./services
COPY migrations ./migrations
RUN pip install --no-cache-dir -c constraints.txt . && useradd --system --uid 10001 knm
USER knm
ENTRYPOINT ["knm"]
CMD ["--help"]

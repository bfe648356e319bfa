# syntax=docker/dockerfile:1
# The SMPP simulator of the dispatch tests (services/dispatch/tests/npm-smsc, on the npm `smpp`
# package) as the compose cluster's SMSC: it answers every submit_sm and sends its DELIVRD receipt.
# Accepts system_id `test`, password `secret`. Not for production.
#   docker build -f deploy/smsc-simulator.Dockerfile services/dispatch/tests/npm-smsc
FROM node:22.12-bookworm-slim
WORKDIR /smsc
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error
COPY smsc.js ./
# uid 1000 is the node image's `node` user, numeric so that it needs no lookup.
USER 1000:1000
EXPOSE 2775
CMD ["node", "smsc.js", "--listen", "0.0.0.0:2775"]

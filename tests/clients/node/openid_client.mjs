// openid-client (https://github.com/panva/openid-client) and jose against fleetauth, as
// their documentation shows: RFC 8414 discovery over HTTPS (the server's certificate is
// trusted through NODE_EXTRA_CA_CERTS, Node's documented way; no check is switched
// off), client_credentials, refresh, introspection, revocation, token exchange
// (RFC 8693), and jwtVerify of the access token (typ at+jwt, RFC 9068 claims) with the
// server's JWKS. Exits non-zero on the first failed check.
import * as client from 'openid-client'
import { createRemoteJWKSet, jwtVerify } from 'jose'

const issuer = process.env.FLEETAUTH_URL
const clientId = process.env.FLEETAUTH_CLIENT_ID
const clientSecret = process.env.FLEETAUTH_CLIENT_SECRET
for (const [name, value] of Object.entries({ FLEETAUTH_URL: issuer, FLEETAUTH_CLIENT_ID: clientId, FLEETAUTH_CLIENT_SECRET: clientSecret })) {
  if (!value) throw new Error(`missing environment variable ${name}`)
}

function expect (condition, message) {
  if (!condition) throw new Error(message)
}

const checks = []
const check = (name, fn) => checks.push([name, fn])
const state = {}

check('discovery', async () => {
  // RFC 8414 discovery (openid-client checks that the issuer is exactly this URL).
  state.config = await client.discovery(new URL(issuer), clientId, undefined, client.ClientSecretBasic(clientSecret), { algorithm: 'oauth2' })
  const meta = state.config.serverMetadata()
  expect(meta.issuer === issuer, `issuer ${meta.issuer}`)
  expect(meta.token_endpoint.startsWith('https://'), meta.token_endpoint)
})

check('client_credentials', async () => {
  const tokens = await client.clientCredentialsGrant(state.config)
  expect(tokens.token_type.toLowerCase() === 'bearer', JSON.stringify(tokens))
  expect(tokens.refresh_token, 'an agent key gets a refresh token')
  state.tokens = tokens
})

check('jwtVerify with the RFC 9068 claims', async () => {
  const jwks = createRemoteJWKSet(new URL(state.config.serverMetadata().jwks_uri))
  const { payload, protectedHeader } = await jwtVerify(state.tokens.access_token, jwks, {
    issuer,
    audience: issuer,
    typ: 'at+jwt',
    requiredClaims: ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti']
  })
  expect(payload.client_id === clientId, JSON.stringify(payload))
  expect(protectedHeader.kid, 'kid')
  let refused = false
  try {
    await jwtVerify(state.tokens.access_token, jwks, { issuer, audience: 'https://other.example', typ: 'at+jwt' })
  } catch { refused = true }
  expect(refused, 'a token for another audience was accepted')
})

check('refresh', async () => {
  const tokens = await client.refreshTokenGrant(state.config, state.tokens.refresh_token)
  expect(tokens.access_token !== state.tokens.access_token, 'new access token')
  expect(tokens.refresh_token !== state.tokens.refresh_token, 'rotated refresh token')
  state.tokens = tokens
})

check('introspection', async () => {
  const answer = await client.tokenIntrospection(state.config, state.tokens.access_token)
  expect(answer.active === true, JSON.stringify(answer))
  expect(answer.client_id === clientId, JSON.stringify(answer))
})

check('token exchange', async () => {
  const exchanged = await client.genericGrantRequest(state.config, 'urn:ietf:params:oauth:grant-type:token-exchange', {
    subject_token: state.tokens.access_token,
    subject_token_type: 'urn:ietf:params:oauth:token-type:access_token'
  })
  expect(exchanged.issued_token_type === 'urn:ietf:params:oauth:token-type:access_token', JSON.stringify(exchanged))
  expect(exchanged.access_token, 'an access token')
})

check('revocation', async () => {
  await client.tokenRevocation(state.config, state.tokens.refresh_token, { token_type_hint: 'refresh_token' })
  let error
  try {
    await client.refreshTokenGrant(state.config, state.tokens.refresh_token)
  } catch (e) { error = e }
  expect(error && error.error === 'invalid_grant', `a revoked refresh token: ${error}`)
  const answer = await client.tokenIntrospection(state.config, state.tokens.access_token)
  expect(answer.active === false, JSON.stringify(answer))
})

for (const [name, fn] of checks) {
  try {
    await fn()
    console.log(`ok   ${name}`)
  } catch (e) {
    console.log(`FAIL ${name}`)
    console.error(e)
    process.exit(1)
  }
}
